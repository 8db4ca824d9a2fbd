"""Command-line programs (Hydra): ``medjax-train``, ``medjax-eval``,
``medjax-predict`` and ``medjax-show``, one module each. They parse, build
(``medjax.config``), call the library and print one-line errors; nothing else
reads a config."""
