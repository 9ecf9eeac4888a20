"""After training, on validation: the temperature (calibration.py) and the decision rule's per-class logit
offsets (decision.py), both folded into the head's final linear layer (fold.py) so that every way of loading
the saved model gives the same labels."""
