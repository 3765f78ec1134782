"""Serving the viewer: the zarr key space of the raw image, labels and predictions (with the one key
parser), the working set of chunks the browser holds and the pushes after each change, and the Neuroglancer layer
specs and shaders. It builds on the core and io, and never imports the widget."""
