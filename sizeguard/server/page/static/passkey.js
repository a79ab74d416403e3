// The approval page's only script: passkey ceremonies (navigator.credentials create/get)
// between the server's options and its verification. No framework, no third-party code.
// Every POST is JSON with the page's CSRF token; the server checks the Origin too.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;

function fromB64url(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = b64 + "===".slice((b64.length + 3) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function toB64url(buffer) {
  let text = "";
  for (const byte of new Uint8Array(buffer)) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function post(url, body) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify(body),
  });
  let answer = {};
  try { answer = await response.json(); } catch (e) { answer = {}; }
  if (!response.ok) throw new Error(answer.message || `HTTP ${response.status}`);
  return answer;
}

function show(status, text, kind) {
  status.textContent = text;
  status.className = "status " + kind;
}

async function enroll(button) {
  const base = button.dataset.url;
  const options = await post(base + "/options", {});
  options.challenge = fromB64url(options.challenge);
  options.user.id = fromB64url(options.user.id);
  for (const c of options.excludeCredentials || []) c.id = fromB64url(c.id);
  const credential = await navigator.credentials.create({ publicKey: options });
  return post(base + "/finish", {
    credential: {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: toB64url(credential.response.clientDataJSON),
        attestationObject: toB64url(credential.response.attestationObject),
        transports: credential.response.getTransports ? credential.response.getTransports() : [],
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment,
    },
  });
}

async function decide(button) {
  const base = button.dataset.url;
  const action = button.dataset.action;
  const options = await post(base + "/options", { action: action });
  options.challenge = fromB64url(options.challenge);
  for (const c of options.allowCredentials || []) c.id = fromB64url(c.id);
  const credential = await navigator.credentials.get({ publicKey: options });
  return post(base + "/decide", {
    action: action,
    credential: {
      id: credential.id,
      rawId: toB64url(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: toB64url(credential.response.clientDataJSON),
        authenticatorData: toB64url(credential.response.authenticatorData),
        signature: toB64url(credential.response.signature),
        userHandle: credential.response.userHandle ? toB64url(credential.response.userHandle) : null,
      },
      clientExtensionResults: credential.getClientExtensionResults(),
      authenticatorAttachment: credential.authenticatorAttachment,
    },
  });
}

for (const button of document.querySelectorAll("button[data-ceremony]")) {
  button.addEventListener("click", async () => {
    const status = document.getElementById("status");
    const buttons = document.querySelectorAll("button[data-ceremony]");
    if (!window.PublicKeyCredential) {
      show(status, "This browser has no passkey support (WebAuthn).", "refused");
      return;
    }
    buttons.forEach((b) => { b.disabled = true; });
    show(status, "Waiting for your passkey…", "waiting");
    try {
      const run = button.dataset.ceremony === "enroll" ? enroll : decide;
      const answer = await run(button);
      show(status, answer.message, "done");
      if (answer.next) setTimeout(() => { window.location.assign(answer.next); }, 1500);
    } catch (error) {
      show(status, String(error.message || error), "refused");
      buttons.forEach((b) => { b.disabled = false; });
    }
  });
}
