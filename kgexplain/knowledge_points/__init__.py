"""Knowledge points (Cheng et al., the knowledge-points paper): building blocks so far.

kappa(l) of the revised vMF (appendix B), the sample-level vMF-mixture projection, and one collection pass
(logits, sample feature, regional features). Regional importance, the regional projection and the counts are
not written yet, and nothing here is wired into the CLI (issue 7 stays open).
"""
