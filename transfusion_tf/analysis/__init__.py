"""Analysis: numpy CCA/SVCCA/PWCCA/CKA, activations from Keras submodels, the paper's figures."""
