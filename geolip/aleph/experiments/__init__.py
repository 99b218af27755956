"""Model-level experiments on AlephLM: the controller contrast (spec §10, ``contrast``), the
preservation arms (§11.1, ``preservation``) and grafting (§13, ``graft``). Each is a pure function
of a model or config; the named experiment programs that sweep them live in ``tune/``. ``names``
holds the contrast's vocabularies, importable without torch."""
