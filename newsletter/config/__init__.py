"""newsletter.toml and the environment -> Config.

Every key is declared once (settings.py), as a dataclass field with its documentation and its
check (checks.py); the loader (loading.py), the environment mapping and docs/configuration.md
all come from those declarations. `[newsletter] key` is overridden by NEWSLETTER_<KEY>, `[smtp]
key` by NEWSLETTER_SMTP_<KEY>. Secrets are never keys: they come only from the environment
(credentials.py: `smtp_password`, `secret`).
"""

from newsletter.config.checks import INIT_BASE_URL, INIT_FROM, LIST_ID, ascii_domain
from newsletter.config.credentials import (
    KEYRING_SERVICE,
    MAKE_SECRET,
    MIN_SECRET_CHARS,
    PASSWORD_ENV,
    SECRET_ENV,
    secret,
    smtp_password,
)
from newsletter.config.loading import (
    CONFIG_NAME,
    documented_keys,
    env_var,
    find_config,
    load_config,
)
from newsletter.config.settings import (
    Config,
    Settings,
    SmtpSettings,
    StoreSettings,
    default_templates_dir,
    key,
)

__all__ = [
    "CONFIG_NAME",
    "INIT_BASE_URL",
    "INIT_FROM",
    "KEYRING_SERVICE",
    "LIST_ID",
    "MAKE_SECRET",
    "MIN_SECRET_CHARS",
    "PASSWORD_ENV",
    "SECRET_ENV",
    "Config",
    "Settings",
    "SmtpSettings",
    "StoreSettings",
    "ascii_domain",
    "default_templates_dir",
    "documented_keys",
    "env_var",
    "find_config",
    "key",
    "load_config",
    "secret",
    "smtp_password",
]
