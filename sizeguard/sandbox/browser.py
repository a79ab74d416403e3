"""A real browser for the approval page's tests, its screenshots and the demo.

Debian's ``chromium`` driven by Selenium through ``/usr/bin/chromedriver`` (both from
``scripts/install-browser``), headless, with Chrome's virtual WebAuthn authenticator in place
of a person's passkey: CTAP2 over the internal transport (a platform authenticator, like
Touch ID or Windows Hello), resident keys, user verification supported and given. The
browser does the real work — ``navigator.credentials.create``/``get``, attestation and
assertion signatures — so the server sees what a person's browser would send.

Several people can share one browser session: :meth:`Browser.as_person` swaps in the
authenticator that holds that person's passkeys (each person has their own, so a discoverable
credential is always the one of the person acting).

Selenium is a development dependency (the ``dev`` extra); this module imports it lazily so
that the package itself does not need it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

__all__ = ["CHROMEDRIVER", "Browser", "BrowserMissingError", "browser_available", "start_browser"]

CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Debian's /usr/bin/chromium is a shell wrapper; the binary behind it is started directly.
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium",)
CHROMIUM_NAMES = ("chromium", "chromium-browser")


class BrowserMissingError(RuntimeError):
    """Chromium or chromedriver is not installed (``scripts/install-browser``)."""


def _chromium() -> str | None:
    for path in CHROMIUM_PATHS:
        if Path(path).is_file():
            return path
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_available() -> bool:
    return CHROMEDRIVER.exists() and _chromium() is not None


@dataclass
class Browser:
    """One headless Chromium with a virtual authenticator per person."""

    driver: WebDriver
    person: str = ""
    _passkeys: dict[str, list[Any]] = field(default_factory=dict)

    def as_person(self, name: str) -> None:
        """From now on the browser's authenticator is ``name``'s: a new, empty one the first
        time, with their passkeys after that. The cookies of the previous person go too."""
        from selenium.webdriver.common.virtual_authenticator import (
            Protocol,
            Transport,
            VirtualAuthenticatorOptions,
        )

        if name == self.person:
            return
        if self.person:
            self._passkeys[self.person] = self.driver.get_credentials()
            self.driver.remove_virtual_authenticator()
        self.driver.delete_all_cookies()
        self.driver.add_virtual_authenticator(
            VirtualAuthenticatorOptions(
                protocol=Protocol.CTAP2,
                transport=Transport.INTERNAL,
                has_resident_key=True,
                has_user_verification=True,
                is_user_consenting=True,
                is_user_verified=True,
            )
        )
        for credential in self._passkeys.get(name, []):
            self.driver.add_credential(credential)
        self.person = name

    def passkeys(self) -> list[Any]:
        """The current person's passkeys (Selenium ``Credential`` objects)."""
        if not self.person:
            return []
        credentials: list[Any] = self.driver.get_credentials()
        return credentials

    def screenshot(self, path: Path) -> Path:
        """A PNG of the whole page, beyond the window's height (Chrome DevTools' capture)."""
        import base64

        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def close(self) -> None:
        self.driver.quit()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def start_browser(*, width: int = 1200, height: int = 900) -> Browser:
    """A headless Chromium (``--headless=new --no-sandbox``) through /usr/bin/chromedriver."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService
    except ImportError as exc:  # pragma: no cover - the dev extra is missing
        raise BrowserMissingError("selenium is not installed: pip install -e '.[dev]'") from exc
    chromium = _chromium()
    if chromium is None or not CHROMEDRIVER.exists():
        raise BrowserMissingError(
            "Chromium and chromedriver are needed (/usr/bin/chromedriver): run "
            "scripts/install-browser (or `make browser`)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-extensions",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=DriverService(str(CHROMEDRIVER)), options=options)
    return Browser(driver)
