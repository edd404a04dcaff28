"""policy_runner: a thin ROS 2 package around deploy.Controller (see node.py)."""
