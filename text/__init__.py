"""Text domain: tokenizers that turn strings into ids, corpora and the language-modelling data module."""
