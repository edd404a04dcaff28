"""Robot backends (deploy.backend.RobotBackend): MuJoCo in-process, Unitree low-level DDS, ANYmal over
ROS 2 topics. Each imports its middleware inside its own module, so `deploy` imports without them."""
