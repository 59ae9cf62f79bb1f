"""TKI (Zhao et al., ACL Findings 2025): task knowledge injection via latent task adaptation and
knowledge reinstatement. See docs/tki.md for every choice the paper leaves open."""
