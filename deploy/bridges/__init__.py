"""Simulated robots on the real robots' wire protocols: a MuJoCo world behind the same DDS topics (Unitree)
or ROS 2 topics (ANYmal) that the hardware backends talk to, so every backend runs end to end on
the loopback interface with no robot."""
