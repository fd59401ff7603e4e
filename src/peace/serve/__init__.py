"""The online side (Sec. 4.5): rankers over stored vectors and the HTTP service.

``rankers`` (zero-shot and normal rankers), ``index`` (approximate inner-product search),
``domains`` (a served domain's state), ``state`` (a snapshot of the store and how it is built),
``service`` (serving logic, hot reload, run-time edits), ``schemas``, ``metrics``, ``guard`` and
``app`` (the HTTP routes).
"""
