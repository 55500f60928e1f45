"""Region and image text from labels and medical priors."""
