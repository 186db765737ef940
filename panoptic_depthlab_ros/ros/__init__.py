"""The ROS 2 node and its parameters: the only place that imports rclpy and ROS message packages."""
