"""ROS 2 message definitions (the .msg text of the standard packages, dependencies appended in the
`MSG: pkg/Type` sections that rosbag2 and the MCAP ROS 2 profile use), so an exported replay's
topics are standard types that `ros2 bag play`, `ros2 bag info` and Foxglove decode without any
package of this project."""
from __future__ import annotations

SEPARATOR = "=" * 80

_DEFS = {
    "builtin_interfaces/Time": "int32 sec\nuint32 nanosec\n",
    "std_msgs/Header": "builtin_interfaces/Time stamp\nstring frame_id\n",
    "geometry_msgs/Vector3": "float64 x\nfloat64 y\nfloat64 z\n",
    "geometry_msgs/Quaternion": "float64 x 0\nfloat64 y 0\nfloat64 z 0\nfloat64 w 1\n",
    "geometry_msgs/Twist": "Vector3 linear\nVector3 angular\n",
    "geometry_msgs/TwistStamped": "std_msgs/Header header\nTwist twist\n",
    "sensor_msgs/JointState": ("std_msgs/Header header\nstring[] name\nfloat64[] position\n"
                               "float64[] velocity\nfloat64[] effort\n"),
    "sensor_msgs/Imu": ("std_msgs/Header header\ngeometry_msgs/Quaternion orientation\n"
                        "float64[9] orientation_covariance\ngeometry_msgs/Vector3 angular_velocity\n"
                        "float64[9] angular_velocity_covariance\n"
                        "geometry_msgs/Vector3 linear_acceleration\n"
                        "float64[9] linear_acceleration_covariance\n"),
    "std_msgs/MultiArrayDimension": "string label\nuint32 size\nuint32 stride\n",
    "std_msgs/MultiArrayLayout": "MultiArrayDimension[] dim\nuint32 data_offset\n",
    "std_msgs/Float32MultiArray": "MultiArrayLayout layout\nfloat32[] data\n",
    "std_msgs/Float32": "float32 data\n",
}
_DEPS = {
    "std_msgs/Header": ["builtin_interfaces/Time"],
    "geometry_msgs/Twist": ["geometry_msgs/Vector3"],
    "geometry_msgs/TwistStamped": ["std_msgs/Header", "geometry_msgs/Twist"],
    "sensor_msgs/JointState": ["std_msgs/Header"],
    "sensor_msgs/Imu": ["std_msgs/Header", "geometry_msgs/Quaternion", "geometry_msgs/Vector3"],
    "std_msgs/MultiArrayLayout": ["std_msgs/MultiArrayDimension"],
    "std_msgs/Float32MultiArray": ["std_msgs/MultiArrayLayout"],
}


def _closure(name: str, seen: list[str]) -> list[str]:
    for dep in _DEPS.get(name, []):
        if dep not in seen:
            seen.append(dep)
            _closure(dep, seen)
    return seen


def msgdef(datatype: str) -> str:
    """The schema text of `pkg/msg/Type` (or pkg/Type) with every dependency appended."""
    name = datatype.replace("/msg/", "/")
    if name not in _DEFS:
        raise KeyError(f"no ROS 2 definition for '{datatype}' (known: {', '.join(sorted(_DEFS))})")
    parts = [_DEFS[name]]
    for dep in _closure(name, []):
        parts.append(f"{SEPARATOR}\nMSG: {dep}\n{_DEFS[dep]}")
    return "".join(parts)
