"""Training: the loop (``loop``), its device and optimizer setup (``setup``), the resume checkpoint
(``resume``), the JSONL log (``log``), training or publishing a preset's models (``runs``) and seed sweeps
(``sweep``)."""
