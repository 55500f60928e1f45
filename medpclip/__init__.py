"""medpclip."""
