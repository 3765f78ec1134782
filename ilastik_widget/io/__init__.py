"""Reading and writing: image sources of every format (:func:`~ilastik_widget.io.sources.open_source`),
project files (save, load, autosave), ilastik projects, export of results, and batch prediction with Dask. It builds
on the core and never imports the serving or widget layers."""
