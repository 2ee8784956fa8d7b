"""Configuration files (YAML) shipped with the package, grouped by concern."""
