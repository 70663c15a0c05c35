"""The operators' web dashboard: server-rendered pages at /dashboard/ on the HTTP API's listener.

Modules:

* :mod:`~relay.dashboard.app`      the aiohttp sub-application, its middlewares, and :data:`PAGES`, the one
                                   list of pages (the nav shows them in that order)
* :mod:`~relay.dashboard.access`   sessions, CSRF, security headers, the ``signed_in`` / ``admin`` decorators
* :mod:`~relay.dashboard.render`   the Jinja2 environment (autoescape on, templates in ``templates/``),
                                   ``render()`` and ``FormErrors``
* :mod:`~relay.dashboard.deps`     ``DashboardDeps``: the store, clock, config and the objects the API uses
* :mod:`~relay.dashboard.accounts` operator names, roles, passwords, session tokens (``relay users`` too)
* :mod:`~relay.dashboard.login`    the login form and logout; one module per page after that (``home`` …)

Adding a page (what each page helper does):

1. A module ``relay/dashboard/<page>.py`` with its handlers and ``PAGE = Page("Title", "/path", [routes])``;
   append ``<page>.PAGE`` to :data:`relay.dashboard.app.PAGES` (only pages that exist are in the nav).
2. Decorate every handler: ``@signed_in`` (any operator may look) or ``@admin`` (actions, and pages that
   show a secret). Any POST is CSRF-checked and refused to a viewer before it reaches a handler, but
   decorate it ``@admin`` all the same. Templates get ``can_change``: show action buttons only if it is true.
3. Templates extend ``base.html``; forms include ``{{ csrf(csrf_field, csrf_token) }}`` (from ``forms.html``)
   and use its ``field()`` macro, which shows a field's error next to it. No inline ``<script>``, no
   ``style=`` attribute, no event-handler attribute: the Content-Security-Policy forbids them; shared CSS
   is in ``static/dashboard.css`` and behaviour in ``static/dashboard.js`` (``relay.post()`` sends the CSRF
   header for fetch()); a page's own goes in ``static/<page>.css`` / ``static/<page>.js``, linked from its
   template's ``{% block head %}``. Never mark text ``|safe``: everything shown may have come from outside.
4. Browser tests in ``tests/test_dashboard_<page>.py`` with the ``dashboard`` fixture (tests/browser.py).

**The rule for every page: reads and writes go through the same code as the API.** Call the store's
methods and the API module's parsing and shaping functions (``relay.api.keys.parse_key_request``,
``key_json``; ``relay.api.queues.queue_json`` …); where an API handler validates inline, first move that
into a function both call (no change to what the API answers). A refusal from a shared parser
(``ApiError``, any :class:`relay.errors.Refused`) is shown on the page next to its field, never a 500::

    @admin
    async def create_key(request: web.Request) -> web.StreamResponse:
        form = await request.post()
        try:
            fields = parse_key_request(key_request_from_form(form))  # the API's parser, the API's errors
        except ApiError as exc:
            return render(request, "credentials.html", status=400, errors=FormErrors.of(exc), ...)
        name, scopes = fields.pop("name"), fields.pop("scopes")
        key, secret = await create_api_key(deps(request).store.keys, deps(request).clock, name, scopes, **fields)
        return render(request, "key_created.html", key=key_json(key), secret=secret)  # shown this once

Errors a handler raises (``web.HTTPNotFound``, a ``StoreError``) become an error page with the status; a
GET without a session is sent to the login page with ``?next=`` (a dashboard path only).
"""
