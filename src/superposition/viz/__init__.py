"""Figures: plain tensors and arrays in, matplotlib or plotly figures out; saving is the caller's.

toy.py             toy-model geometry (directions, Gram matrices, dimensionality, dynamics)
phase_diagram.py   the phase of an extra feature over importance × sparsity
double_descent.py  losses and geometry against dataset size
sae.py             SAE density histograms, training curves, metrics, decoder directions
"""
