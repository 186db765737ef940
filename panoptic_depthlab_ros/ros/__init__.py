"""ROS 2 glue: the node, message conversion. The only place that imports rclpy."""
