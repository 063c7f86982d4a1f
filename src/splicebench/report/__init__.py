"""HTML and other outputs: view-models -> Jinja2 templates, SVG charts, Parquet export."""
