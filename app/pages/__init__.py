"""The service's few HTML pages, for people following a link from a mail (not the JSON API).

Server-rendered with Jinja2 (autoescaped), no script, one stylesheet: they work without
JavaScript. `web.py` is what every page shares (templates, headers, the form body, the password
rules); `invitations.py` is the accept page; `router.py` gathers them with the stylesheet.
"""
