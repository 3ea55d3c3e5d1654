"""The data the models learn from: the corpus (``corpus``), tokenizers (``tokenizer``), token streams cached
on disk (``tokens``), the training and validation windows cut from them (``batches``), corpus statistics
(``stats``) and held-out passages for the figures (``passages``)."""
