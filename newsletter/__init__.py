"""Write a newsletter as TOML in git; render it with MJML; send it over SMTP."""

__version__ = "0.1.0"
