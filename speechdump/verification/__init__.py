"""Speaker verification on extracted embeddings: trial lists (``trials``), cosine scoring and
cohort score normalisation (``scoring``), a two-covariance PLDA (``plda``), EER and minDCF
(``metrics``) and the DET plot (``det``)."""
