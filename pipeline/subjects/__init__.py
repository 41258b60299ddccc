"""The people whose data it is: subject access and portability (`access`)."""
