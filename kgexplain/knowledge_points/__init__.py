"""Knowledge points (Cheng et al., the knowledge-points paper).

kappa.py: kappa(l) of the revised vMF (appendix B); sample.py: the sample embedding g = M f; collect.py: one forward
pass (logits, sample feature, regional features); importance.py: regional / channel importance w, v;
regional.py: the regional projection h = Lambda f^(r); points.py: knowledge points and reliability;
analyse.py: one model end to end; run.py: `kgexplain kp` (store rows, plots).
"""
