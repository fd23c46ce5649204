"""The paper's analysis (§4): the attack effect on parameters (AEP) measured against a
counterfactual run, its estimator (eq. 7), and the Hessian evidence for why it persists."""
