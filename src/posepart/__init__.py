"""posepart: multi-person pose estimation learned jointly with human part segmentation."""
__version__ = "0.1.0"
