//! The account we work in, and the ARNs we can compute from it without asking AWS.

use super::Result;
use super::error::unexpected;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: String,
    pub id: String,
    pub region: String,
}

impl Account {
    /// From STS GetCallerIdentity (`arn:<partition>:sts::<account>:...`).
    pub fn from_caller(
        arn: Option<&str>,
        account: Option<&str>,
        region: String,
    ) -> Result<Account> {
        let arn = arn.ok_or_else(|| unexpected("STS", "GetCallerIdentity returned no ARN"))?;
        let partition = arn
            .split(':')
            .nth(1)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| unexpected("STS", format!("caller ARN {arn:?} has no partition")))?;
        let id = account
            .map(str::to_string)
            .or_else(|| arn.split(':').nth(4).map(str::to_string))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| unexpected("STS", "GetCallerIdentity returned no account"))?;
        Ok(Account {
            partition: partition.to_string(),
            id,
            region,
        })
    }

    pub fn root(&self) -> String {
        format!("arn:{}:iam::{}:root", self.partition, self.id)
    }

    pub fn sns_topic(&self, name: &str) -> String {
        format!(
            "arn:{}:sns:{}:{}:{name}",
            self.partition, self.region, self.id
        )
    }

    pub fn role(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:role/{name}", self.partition, self.id)
    }
}

/// The issuer host path of an IAM OIDC provider ARN
/// (`arn:aws:iam::123:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC`).
pub fn oidc_issuer(provider_arn: &str) -> Option<&str> {
    provider_arn
        .split_once(":oidc-provider/")
        .map(|(_, issuer)| issuer)
        .filter(|i| !i.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_caller_identity() {
        let a = Account::from_caller(
            Some("arn:aws-cn:sts::123456789012:assumed-role/x/y"),
            None,
            "cn-north-1".into(),
        )
        .unwrap();
        assert_eq!(a.partition, "aws-cn");
        assert_eq!(a.id, "123456789012");
        assert_eq!(a.sns_topic("t"), "arn:aws-cn:sns:cn-north-1:123456789012:t");
        assert_eq!(a.root(), "arn:aws-cn:iam::123456789012:root");
        assert!(Account::from_caller(None, None, "r".into()).is_err());
    }

    #[test]
    fn issuer_from_provider() {
        assert_eq!(
            oidc_issuer("arn:aws:iam::1:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/AB"),
            Some("oidc.eks.eu-west-1.amazonaws.com/id/AB")
        );
        assert_eq!(oidc_issuer("arn:aws:iam::1:role/x"), None);
    }
}
