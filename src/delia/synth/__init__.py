"""Data synthesis: self-sampled diverse data, anisotropic diversification, dataset statistics."""
