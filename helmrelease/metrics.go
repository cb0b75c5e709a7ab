package helmrelease

// CountResults counts the release by its status (deployed, uninstalled,
// ...), for the invocation's metrics record (invoke.ResultCounter).
func (r *Result) CountResults() map[string]int {
	if r.Status == "" {
		return nil
	}
	return map[string]int{r.Status: 1}
}
