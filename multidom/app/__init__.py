"""The run recipes, apart from the library: the ``multidom`` CLI (:mod:`.cli`), YAML configs (:mod:`.config`),
the table of trainers and its one config-to-run path (:mod:`.recipes`), data loading (:mod:`.data`),
``multidom evaluate`` (:mod:`.evaluate`), ``multidom baseline`` (:mod:`.baseline`), output directories
(:mod:`.rundir`), the quickstart (:mod:`.quickstart`) and the exact-reward toy task (:mod:`.toy`)."""
