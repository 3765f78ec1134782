"""The numpy core: the filter bank and features, label classes and brush strokes, the Random Forest
classifier and :class:`~ilastik_widget.core.session.Session`. It imports nothing from the I/O, serving or widget
layers, and no Jupyter machinery."""
