"""Human rating: protocols, campaigns, assignment rules, submitting answers and rater auth."""
