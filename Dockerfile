# The sizeguard image: the admission webhook (`sizeguard webhook ...`) and the MCP server
# (`sizeguard serve ...`). Build: docker build -t sizeguard/sizeguard:0.1.0 .
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sizeguard ./sizeguard
RUN python -m venv /opt/sizeguard \
 && /opt/sizeguard/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/sizeguard/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
COPY --from=build /opt/sizeguard /opt/sizeguard
# 65532: the conventional "nonroot" user; the chart runs with a read-only root filesystem.
USER 65532:65532
ENV PATH=/opt/sizeguard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["sizeguard"]
CMD ["--help"]
