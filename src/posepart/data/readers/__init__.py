"""Dataset readers: convert public release layouts into the posepart format (`posepart convert`)."""
