"""Who may do what: TokenReview authentication, leader election on a Lease, and the
fence that stops a deposed leader's writes."""
