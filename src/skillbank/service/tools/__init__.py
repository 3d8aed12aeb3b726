"""Operator tools on an outputs folder: ``status`` (``skillbank runs``), ``convert``
(``convert-adapter``), ``consolidate``, ``library_add`` (``skillbank library add``)."""
