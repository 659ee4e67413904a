"""The policy domain: dates with precision, the Rule aggregate, and the pure fold to states."""
