{
    "name": "dkn_auth: shared sessions in Redis or PostgreSQL",
    "summary": "Store HTTP sessions in Redis or PostgreSQL so every Odoo node shares them",
    "version": "1.0.0",
    "category": "Hidden/Tools",
    "license": "LGPL-3",
    "author": "dkn_auth contributors",
    "depends": ["base", "web"],
    "data": [],
    "installable": True,
    "auto_install": False,
    # Server-wide: load with server_wide_modules = base,web,dkn_auth
    "post_load": "post_load",
}
