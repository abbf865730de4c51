"""The embedded default dataset: synthetic people (pose + part segmentation) in cluttered scenes.

`render_scene(rng, size)` draws one image; `write_synth(out, n, seed)` writes a dataset in the posepart format with
`Schema.pascal_person_part()`. Image i depends only on (seed, i). Modules: `pose` (proportions, joint angles, 3D ->
image), `body` (outfits, filled shapes per part), `texture` (materials, degradations), `background`, `scene`.
"""

from posepart.data.synth.scene import (DEMO_SIZE, DEMO_TRAIN_SCENES, DEMO_VAL_SCENES, MADE_KEY, SLICES, SceneConfig,
                                       SynthScene, iter_scenes, render_scene, scene_at, write_synth)

__all__ = ["DEMO_SIZE", "DEMO_TRAIN_SCENES", "DEMO_VAL_SCENES", "MADE_KEY", "SLICES", "SceneConfig", "SynthScene",
           "iter_scenes", "render_scene", "scene_at", "write_synth"]
