"""Probes: what a tuned model learnt about its format token, and why diverse data helps.

  repr        L2 distance of the special token's hidden states to keywords, per block (paper Fig. 2, Table 1)
  divergent   next-token state space at the first assistant token (paper Fig. 4)
  losscurve   held-out task loss against step from training logs (paper Fig. 3)
  gradients   the buffering diagnostic: LoRA gradients of task, diverse and real mixed batches (mixed.py),
              with findings for and against the paper built from the numbers (gradient_text.py)
  heldout     held-out task loss of a finished run's model at the end of training (paper Fig. 3, no CLI)
See docs/probes.md for exactly what each measures.
"""
