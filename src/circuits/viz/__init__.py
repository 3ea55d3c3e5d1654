"""What the reader sees: plotly figures (``plots``), the attention viewer (``attention_view``), the searchable
token browser (``token_browser``), readable tokens (``tokens``), their shared HTML plumbing (``html``) and the
book's offline figure renderer (``book``). Every function here is handed numbers and strings, never a model."""
