"""State kept between events: tasks in flight and the workers seen."""
