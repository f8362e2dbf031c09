"""Everything that touches napari or Qt: the widget, overlay layers, sample data."""
