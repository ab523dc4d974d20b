"""What the recipes share: configuration sections, opening the speech data
(manifests or feature cache) and presets."""

from __future__ import annotations
