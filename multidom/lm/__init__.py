"""Language-model plumbing used by every trainer and by evaluation: the one loader (:mod:`.loading`), the one
generation helper (:mod:`.generation`), the one per-sequence log-prob helper (:mod:`.logprobs`) and the
offline trainers' tokenisation (:mod:`.tokenize`)."""
