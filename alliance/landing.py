"""The page a scanned QR code opens (`GET /c/{code}`): HTML that opens the app through its deep link
and falls back to the web, counting the open once per device (a first-party cookie).

The page is static apart from the code: no third-party script, a CSP that allows only its own inline
script (by hash). API clients that ask for JSON (`Accept: application/json`) get the attribution.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from urllib.parse import quote

DEVICE_COOKIE = "rf_dev"
DEVICE_COOKIE_MAX_AGE = 365 * 24 * 3600

# Opens the app; if the page is still visible 1.5 s later (no app took the link), goes to the web.
_SCRIPT = """
(function () {
  var d = document.getElementById('rf').dataset;
  var left = false;
  document.addEventListener('visibilitychange', function () { if (document.hidden) left = true; });
  window.location.href = d.app;
  setTimeout(function () { if (!left && d.web) window.location.href = d.web; }, 1500);
})();
""".strip()
SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
CSP = (
    f"default-src 'none'; script-src '{SCRIPT_HASH}'; style-src 'unsafe-inline'; img-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def app_link(base: str, code: str) -> str:
    return base + quote(code, safe="")


def web_link(template: str, code: str) -> str:
    return template.replace("{code}", quote(code, safe="")) if template else ""


def new_device_id() -> str:
    return secrets.token_urlsafe(16)


def page(code: str, app: str, web: str) -> str:
    a, w = html.escape(app, quote=True), html.escape(web, quote=True)
    web_line = (
        f'<p><a href="{w}">Continue on the web</a></p>'
        if web
        else "<p>No app? Install it, then scan the code again.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Opening the live room…</title>
<style>body{{font-family:system-ui,sans-serif;margin:3rem auto;max-width:28rem;padding:0 1rem;text-align:center}}
a.button{{display:inline-block;padding:.8rem 1.4rem;border-radius:.5rem;background:#e4393c;color:#fff;text-decoration:none}}</style>
</head><body>
<div id="rf" data-app="{a}" data-web="{w}" data-code="{html.escape(code, quote=True)}"></div>
<h1>Opening the live room…</h1>
<p><a class="button" href="{a}">Open in the app</a></p>
{web_line}
<script>{_SCRIPT}</script>
</body></html>
"""
