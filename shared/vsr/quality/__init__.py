"""Quality measurement: image metrics against an original, temporal metrics from optical flow."""
