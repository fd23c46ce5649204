"""Client behaviours: benign local SGD, the targeted poisoning attack, and FL-WBC."""
