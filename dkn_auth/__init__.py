"""dkn_auth: Odoo HTTP sessions in Redis or PostgreSQL, shared by every node.

``store/`` is the storage core and imports nothing from Odoo; ``odoo_http/`` adapts it to
Odoo's HTTP layer. Nothing Odoo-specific runs at import, so the core can be used (and tested)
without Odoo.
"""


def post_load():
    """Odoo calls this right after importing the add-on (see __manifest__.py)."""
    from .odoo_http import install

    install()
