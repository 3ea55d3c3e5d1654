"""Every claim of the papers as a row: the paper's value, ours, a verdict and where the book measures it."""
